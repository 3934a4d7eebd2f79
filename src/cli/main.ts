console.log('keel: under construction');
